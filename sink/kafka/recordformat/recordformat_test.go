package recordformat_test

import (
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/sink/kafka/recordformat"
)

func TestParse(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]recordformat.Name{
		"": recordformat.Raw, "raw": recordformat.Raw, " debezium-outbox ": recordformat.DebeziumOutbox,
		"cloudevents-binary": recordformat.CloudEventsBinary, "cloudevents-structured": recordformat.CloudEventsStructured,
	} {
		if got, err := recordformat.Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"json", "RAW", "cloudevents", "debezium"} {
		_, err := recordformat.Parse(in)
		if err == nil || !strings.Contains(err.Error(), "raw, cloudevents-binary, cloudevents-structured or debezium-outbox") ||
			!strings.Contains(err.Error(), `"`+in+`"`) {
			t.Errorf("Parse(%q) = %v; want an error naming the value and the allowed ones", in, err)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		f    recordformat.Format
		want string // "" valid, else a substring of the error
	}{
		{"zero is raw", recordformat.Format{}, ""},
		{"debezium default header", recordformat.Format{Name: recordformat.DebeziumOutbox}, ""},
		{"debezium own header", recordformat.Format{Name: recordformat.DebeziumOutbox, TypeHeader: "type"}, ""},
		{"cloudevents source", recordformat.Format{Name: recordformat.CloudEventsBinary, Source: "urn:shop:orders"}, ""},
		{"unknown", recordformat.Format{Name: "avro"}, `format "avro" is not raw`},
		{"bad source", recordformat.Format{Name: recordformat.CloudEventsStructured, Source: "a b"}, "Source:"},
		{"type header with raw", recordformat.Format{TypeHeader: "eventType"}, "applies only to format debezium-outbox"},
		{"type header id", recordformat.Format{Name: recordformat.DebeziumOutbox, TypeHeader: "ID"}, "message id's header"},
		{"type header pgoutbox", recordformat.Format{Name: recordformat.DebeziumOutbox, TypeHeader: "Pgoutbox-Type"}, "sink's own headers"},
		{"type header blank", recordformat.Format{Name: recordformat.DebeziumOutbox, TypeHeader: " "}, "empty"},
		{"type header CRLF", recordformat.Format{Name: recordformat.DebeziumOutbox, TypeHeader: "a\r\nb"}, "control character"},
		{"type header long", recordformat.Format{Name: recordformat.DebeziumOutbox, TypeHeader: strings.Repeat("h", 256)}, "over the limit of 255"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.f.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v; want %q", err, tc.want)
			}
		})
	}
	if h := (recordformat.Format{Name: recordformat.DebeziumOutbox}).EffectiveTypeHeader(); h != "eventType" {
		t.Fatalf("default type header %q", h)
	}
}
