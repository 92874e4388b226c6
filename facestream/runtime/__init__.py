"""Runtime shared by every pipeline worker: settings, topics, metrics, and the Kafka loop."""
