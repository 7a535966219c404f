package config

import (
	"github.com/pgoutbox/pgoutbox/sink/kafka/recordformat"
)

// RecordFormat returns the record format of a kafka route: format is raw (default), cloudevents-binary,
// cloudevents-structured or debezium-outbox; cloudevents_source and cloudevents_type apply to the
// CloudEvents ones, debezium_type_header (default eventType) to debezium-outbox.
func (k KafkaRoute) RecordFormat() recordformat.Format {
	name, _ := recordformat.Parse(k.Format) // validated at load
	return recordformat.Format{Name: name, Source: k.CloudEventsSource, Type: k.CloudEventsType, TypeHeader: k.DebeziumTypeHeader}
}

// validateKafkaFormat checks a kafka route's format keys (key is "routes.<dest>.kafka"), each error
// naming its key.
func validateKafkaFormat(key string, k *KafkaRoute) []error {
	var errs []error
	name, err := recordformat.Parse(k.Format)
	if err != nil {
		errs = append(errs, keyError(key+".format", "%v", err))
	}
	if err := (recordformat.Format{Source: k.CloudEventsSource}).Validate(); err != nil {
		errs = append(errs, keyError(key+".cloudevents_source", "%v", err))
	}
	if k.DebeziumTypeHeader == "" {
		return errs
	}
	if err == nil && name != recordformat.DebeziumOutbox {
		errs = append(errs, keyError(key+".debezium_type_header", "applies only to %s.format: %s (the format is %s)",
			key, recordformat.DebeziumOutbox, name))
	} else if err := recordformat.ValidateTypeHeader(k.DebeziumTypeHeader); err != nil {
		errs = append(errs, keyError(key+".debezium_type_header", "%v", err))
	}
	return errs
}
