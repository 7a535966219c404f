package kafkatest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// KafkaImage is the image the Docker fallback runs. Keep its version in step with scripts/kafka/pom.xml.
const KafkaImage = "apache/kafka:4.1.0"

var (
	containerOnce    sync.Once
	containerAddrs   []string
	containerFailure string
)

// containerBrokers starts (once per test binary) a single-node KRaft broker in Docker and returns its
// address, or a reason why it could not. The container is left to the testcontainers reaper, which
// removes it when the test binary exits; no test owns it, so none may stop it.
//
// The testcontainers Kafka module (github.com/testcontainers/testcontainers-go/modules/kafka) is not
// available at the testcontainers version this module pins, so the broker is a GenericContainer:
// a free host port is bound to the same container port, which lets the broker advertise
// 127.0.0.1:<port> before it starts.
func containerBrokers(t testing.TB) ([]string, string) {
	t.Helper()
	containerOnce.Do(func() {
		containerAddrs, containerFailure = startContainer()
	})
	return containerAddrs, containerFailure
}

func startContainer() (addrs []string, failure string) {
	defer func() {
		if r := recover(); r != nil {
			addrs, failure = nil, fmt.Sprintf("no Docker engine answers (%v)", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	provider, err := testcontainers.ProviderDefault.GetProvider()
	if err != nil {
		return nil, fmt.Sprintf("no Docker engine answers (%v)", err)
	}
	defer provider.Close()
	if err := provider.Health(ctx); err != nil {
		return nil, fmt.Sprintf("no Docker engine answers (%v)", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, fmt.Sprintf("no free port for the Kafka container: %v", err)
	}
	p := strconv.Itoa(port)
	cport := network.MustParsePort(p + "/tcp")
	_, err = testcontainers.Run(ctx, KafkaImage,
		testcontainers.WithExposedPorts(p+"/tcp"),
		testcontainers.WithEnv(map[string]string{
			"KAFKA_NODE_ID":                                  "1",
			"KAFKA_PROCESS_ROLES":                            "broker,controller",
			"KAFKA_LISTENERS":                                "PLAINTEXT://0.0.0.0:" + p + ",CONTROLLER://127.0.0.1:9093",
			"KAFKA_ADVERTISED_LISTENERS":                     "PLAINTEXT://127.0.0.1:" + p,
			"KAFKA_CONTROLLER_LISTENER_NAMES":                "CONTROLLER",
			"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":           "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
			"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@127.0.0.1:9093",
			"KAFKA_AUTO_CREATE_TOPICS_ENABLE":                "false",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
			"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":         "0",
		}),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{cport: {{HostPort: p}}}
		}),
		testcontainers.WithWaitStrategy(wait.ForListeningPort(p+"/tcp").WithStartupTimeout(2*time.Minute)),
	)
	if err != nil {
		return nil, fmt.Sprintf("the Kafka container did not start: %v", err)
	}
	return []string{"127.0.0.1:" + p}, ""
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
