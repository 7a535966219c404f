package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// secretPrefix starts a Standard Webhooks symmetric signing secret.
const secretPrefix = "whsec_"

// Signing secret sizes the Standard Webhooks specification allows (24 to 64 random bytes).
const (
	minSecretBytes = 24
	maxSecretBytes = 64
)

// ValidateSigningSecret reports whether s is a Standard Webhooks signing secret: "whsec_" followed by
// the standard base64 of 24 to 64 random bytes. The error never contains the secret.
func ValidateSigningSecret(s string) error {
	_, err := parseSecret(s)
	return err
}

func parseSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return nil, errors.New("want whsec_ followed by the base64 of 24 to 64 random bytes (Standard Webhooks); " +
			"the value does not start with whsec_")
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errors.New("the part after whsec_ is not standard base64 (Standard Webhooks)")
	}
	if len(key) < minSecretBytes || len(key) > maxSecretBytes {
		return nil, fmt.Errorf("decodes to %d bytes; Standard Webhooks wants %d to %d random bytes", len(key), minSecretBytes, maxSecretBytes)
	}
	return key, nil
}

// sign returns the webhook-signature value: "v1," and the base64 HMAC-SHA256 of "id.timestamp.body".
func sign(key []byte, id, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
