package envelope

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// FuzzDecode: Decode never panics; what it accepts is within the limits and encodes back to the same
// bytes (one envelope per message); what it rejects wraps ErrMalformed.
func FuzzDecode(f *testing.F) {
	e := sample()
	f.Add(Append(nil, &e))
	f.Add(build(nil))
	f.Add(Append(nil, &Envelope{Destination: "d", CreatedAt: time.UnixMicro(0)}))
	f.Add([]byte{Version})
	f.Add([]byte{2, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := Decode(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if got.Destination == "" || len(got.Destination) > 255 || len(got.Route) > 255 || len(got.Key) > 1024 || len(got.Type) > 255 {
			t.Fatalf("accepted fields out of limits: %+v", got)
		}
		out := Append(nil, &got)
		if !bytes.Equal(out, in) {
			t.Fatalf("not canonical: decoded and encoded again\n%x\nfrom\n%x", out, in)
		}
		if Size(&got) != len(in) {
			t.Fatalf("Size %d, envelope %d bytes", Size(&got), len(in))
		}
	})
}
