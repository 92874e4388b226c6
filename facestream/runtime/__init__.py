"""Runtime shared by every pipeline worker: settings, topics, metrics, logging, the Kafka loop
(:mod:`.runner`) and the one entry point that starts a worker (:mod:`.entry`)."""
