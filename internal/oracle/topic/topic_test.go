package topic

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pgoutbox/pgoutbox/sink/kafka"
)

func TestDeliveries(t *testing.T) {
	t.Parallel()
	recs := []*kgo.Record{
		{Key: []byte("k"), Value: []byte("v"), Partition: 1, Offset: 7, Headers: []kgo.RecordHeader{{Key: kafka.HeaderID, Value: []byte("id-1")}}},
	}
	ds, err := Deliveries(recs)
	if err != nil || len(ds) != 1 || ds[0].ID != "id-1" || ds[0].Key != "k" || string(ds[0].Payload) != "v" || ds[0].Pos == "" {
		t.Fatalf("Deliveries = %+v, %v", ds, err)
	}
	recs = append(recs, &kgo.Record{Key: []byte("k"), Partition: 1, Offset: 8})
	if _, err := Deliveries(recs); err == nil {
		t.Error("a record without the id header was accepted")
	}
}
