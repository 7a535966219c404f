package rabbitmq

// Dialer is the sink's dial function (write coalescing), for benchmarks that compare it with
// amqp091-go's own.
var Dialer = dialer
