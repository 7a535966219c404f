package decoder_test

import (
	"encoding/hex"
	"fmt"

	"github.com/pgoutbox/pgoutbox/decoder"
)

// printer is a Handler that looks columns up by name, as the relay does.
type printer struct{}

func (printer) Begin(tx decoder.TxInfo) error { fmt.Println("begin", tx.Xid); return nil }
func (printer) Insert(row decoder.Row) error {
	if i := row.Relation.Index("key"); i >= 0 {
		fmt.Printf("insert into %s: key=%s\n", row.Relation.Name, row.Values[i])
	}
	return nil
}
func (printer) Commit(c decoder.CommitInfo) error {
	fmt.Println("commit, confirm", c.EndLSN)
	return nil
}

func ExampleDecoder() {
	d, err := decoder.New(decoder.Config{})
	if err != nil {
		panic(err)
	}
	defer d.Close()
	// The WALData of four XLogData messages: Begin, Relation, Insert, Commit.
	for _, h := range []string{
		"4200000000000001000002b0ec8515f34600000007",
		"52000040007075626c696300706b675f6f7574626f7800640002017365710000000014ffffffff006b65790000000019ffffffff",
		"49000040004e000274000000013174000000056b65792d31",
		"4300000000000000010000000000000001080002b0ec8515f346",
	} {
		msg, _ := hex.DecodeString(h)
		if err := d.Decode(msg, printer{}); err != nil {
			fmt.Println(err)
			return
		}
	}
	// Output:
	// begin 7
	// insert into pkg_outbox: key=key-1
	// commit, confirm 0/108
}
