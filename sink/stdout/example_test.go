package stdout_test

import (
	"context"
	"log"
	"os"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/stdout"
)

// The relay calls Send with batches of records; each becomes one JSON line. With the relay:
// outbox.WithSink("audit", stdout.New(os.Stdout)).
func ExampleSink() {
	s := stdout.New(os.Stdout)
	err := s.Send(context.Background(), []outbox.Record{
		{Message: outbox.Message{ID: "0190a5b2-0000-7000-8000-000000000001", Destination: "audit", Key: "order-42",
			Type: "OrderPlaced", Payload: []byte(`{"id":42}`), Headers: map[string]string{"tenant": "acme"}}, Seq: 1},
		{Message: outbox.Message{ID: "0190a5b2-0000-7000-8000-000000000002", Destination: "audit", Key: "order-42",
			Type: "Thumbnail", Payload: []byte{0xff, 0xd8, 0xff}}, Seq: 2},
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// {"id":"0190a5b2-0000-7000-8000-000000000001","destination":"audit","key":"order-42","type":"OrderPlaced","headers":{"tenant":"acme"},"seq":1,"payload":"{\"id\":42}"}
	// {"id":"0190a5b2-0000-7000-8000-000000000002","destination":"audit","key":"order-42","type":"Thumbnail","seq":2,"payload_base64":"/9j/"}
}
