package kafka

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// A SCRAM (RFC 5802 / RFC 7677) client for sarama's SCRAMClientGeneratorFunc, so SASL/SCRAM needs no
// extra dependency. Only the Kafka-relevant subset: no channel binding ("n,,"), and the password is used
// as given (SASLprep is the identity for ASCII passwords; non-ASCII ones must already be normalized).

type hashFunc func() hash.Hash

var (
	sha256Hash hashFunc = sha256.New
	sha512Hash hashFunc = sha512.New
)

type scramClient struct {
	h               hashFunc
	user, password  string
	authzID         string
	nonce           string // client nonce
	clientFirstBare string
	serverSignature []byte
	step            int
	done            bool
	nonceForTesting string
}

func newSCRAMClient(h hashFunc) *scramClient { return &scramClient{h: h} }

var scramEscaper = strings.NewReplacer("=", "=3D", ",", "=2C")

func (c *scramClient) Begin(user, password, authzID string) error {
	c.user, c.password, c.authzID = user, password, authzID
	c.step, c.done = 0, false
	if c.nonceForTesting != "" {
		c.nonce = c.nonceForTesting
		return nil
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("scram: nonce: %w", err)
	}
	c.nonce = base64.RawStdEncoding.EncodeToString(b[:])
	return nil
}

func (c *scramClient) Done() bool { return c.done }

func (c *scramClient) Step(challenge string) (string, error) {
	c.step++
	switch c.step {
	case 1:
		c.clientFirstBare = "n=" + scramEscaper.Replace(c.user) + ",r=" + c.nonce
		gs2 := "n,"
		if c.authzID != "" {
			gs2 += "a=" + scramEscaper.Replace(c.authzID)
		}
		return gs2 + "," + c.clientFirstBare, nil
	case 2:
		return c.final(challenge)
	case 3:
		c.done = true
		attrs := scramAttrs(challenge)
		if e, ok := attrs["e"]; ok {
			return "", fmt.Errorf("scram: server error: %s", e)
		}
		v, err := base64.StdEncoding.DecodeString(attrs["v"])
		if err != nil || subtle.ConstantTimeCompare(v, c.serverSignature) != 1 {
			return "", errors.New("scram: server signature does not verify")
		}
		return "", nil
	}
	return "", errors.New("scram: unexpected step")
}

func (c *scramClient) final(serverFirst string) (string, error) {
	attrs := scramAttrs(serverFirst)
	nonce, saltB64, iterS := attrs["r"], attrs["s"], attrs["i"]
	if !strings.HasPrefix(nonce, c.nonce) || len(nonce) == len(c.nonce) {
		return "", errors.New("scram: server nonce does not extend the client nonce")
	}
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil || len(salt) == 0 {
		return "", errors.New("scram: bad salt")
	}
	iter, err := strconv.Atoi(iterS)
	if err != nil || iter < 1 {
		return "", fmt.Errorf("scram: bad iteration count %q", iterS)
	}
	gs2 := "n,"
	if c.authzID != "" {
		gs2 += "a=" + scramEscaper.Replace(c.authzID)
	}
	withoutProof := "c=" + base64.StdEncoding.EncodeToString([]byte(gs2+",")) + ",r=" + nonce
	authMessage := c.clientFirstBare + "," + serverFirst + "," + withoutProof

	salted, err := pbkdf2.Key((func() hash.Hash)(c.h), c.password, salt, iter, c.h().Size())
	if err != nil {
		return "", fmt.Errorf("scram: pbkdf2: %w", err)
	}
	clientKey := c.hmac(salted, "Client Key")
	storedKey := c.sum(clientKey)
	clientSig := c.hmac(storedKey, authMessage)
	proof := make([]byte, len(clientKey))
	for i := range clientKey {
		proof[i] = clientKey[i] ^ clientSig[i]
	}
	serverKey := c.hmac(salted, "Server Key")
	c.serverSignature = c.hmac(serverKey, authMessage)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
}

func (c *scramClient) hmac(key []byte, msg string) []byte {
	m := hmac.New(c.h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func (c *scramClient) sum(b []byte) []byte {
	h := c.h()
	h.Write(b)
	return h.Sum(nil)
}

func scramAttrs(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if len(kv) >= 2 && kv[1] == '=' {
			out[kv[:1]] = kv[2:]
		}
	}
	return out
}
