package names

// MessagePrefixStart starts the prefix of the logical decoding messages of an outbox schema.
const MessagePrefixStart = "pgoutbox:"

// MessagePrefix is the prefix of the logical decoding messages that Enqueue's LogicalMessage transport
// writes for schema and that the schema's relay delivers: "pgoutbox:<schema>".
func MessagePrefix(schema string) string { return MessagePrefixStart + schema }
