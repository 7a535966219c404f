// KafkaReady waits until a broker answers a metadata request (AdminClient.listTopics sends Metadata)
// and reports at least one live broker. Run by scripts/kafka.sh as a single-file source program:
//   java -cp '<libs>/*' KafkaReady.java <bootstrap> <timeout-seconds>
// Exit code 0 when ready, 1 on timeout.
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListTopicsOptions;

public class KafkaReady {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "2000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        String last = "";
        try (Admin admin = Admin.create(p)) {
            while (System.nanoTime() < deadline) {
                try {
                    admin.listTopics(new ListTopicsOptions().timeoutMs(3000)).names().get(4, TimeUnit.SECONDS);
                    int nodes = admin.describeCluster().nodes().get(4, TimeUnit.SECONDS).size();
                    if (nodes > 0) {
                        System.exit(0);
                    }
                    last = "no live brokers yet";
                } catch (Exception e) {
                    last = e.toString();
                }
                Thread.sleep(300);
            }
        }
        System.err.println("kafka at " + bootstrap + " not ready: " + last);
        System.exit(1);
    }
}
