package webhook_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The receiver's verification example in docs/daemon.md compiles and accepts the Standard Webhooks
// reference vector (which TestSignatureMatchesReferenceVector shows the sink produces), and rejects a
// tampered body and a replayed timestamp.
func TestDocsVerificationExample(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/daemon.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```go\npackage hooks\n")
	code, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("docs/daemon.md has no ```go block starting with package hooks")
	}
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":    "module verifydoc\n\ngo 1.22\n",
		"verify.go": "package main\n" + code,
		"main.go": `package main

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	const secret, payload = "` + vectorSecret + `", ` + "`" + vectorPayload + "`" + `
	h := http.Header{}
	h.Set("webhook-id", "` + vectorID + `")
	h.Set("webhook-timestamp", "1614265330")
	h.Set("webhook-signature", "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= ` + vectorSignature + `")
	now := time.Unix(1614265330, 0).Add(time.Minute)
	if err := VerifyPgoutbox(secret, h, []byte(payload), now); err != nil {
		fmt.Println("the reference vector does not verify:", err)
		os.Exit(1)
	}
	if VerifyPgoutbox(secret, h, []byte(payload+" "), now) == nil {
		fmt.Println("a tampered body verifies")
		os.Exit(1)
	}
	if VerifyPgoutbox(secret, h, []byte(payload), now.Add(10*time.Minute)) == nil {
		fmt.Println("a replayed timestamp verifies")
		os.Exit(1)
	}
}
`,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "run", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the docs example: %v\n%s", err, out)
	}
}
