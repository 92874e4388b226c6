"""A real local Kafka + Redis stack for development and tests, without Docker.

* :mod:`.config` -- where the stack lives, its ports (``FACESTREAM_*``), :class:`StackError`;
* :mod:`.install` -- Kafka's jars from Maven Central, ``redis-server`` from apt, the Java check;
* :mod:`.process` -- install steps run to a log, daemons known by pid file, the stack lock;
* :mod:`.kafka_broker` and :mod:`.redis_server` -- configure, start and probe each service;
* :mod:`.topics` -- the pipeline's topics (:func:`facestream.runtime.topics.topic_specs`)
  created on the stack's broker;
* :mod:`.stack` -- the lifecycle: ``up``, ``down``, ``status``, ``wait_ready``;
* :mod:`.workers` -- pipeline worker processes started and stopped locally.

The command line is ``facestream stack up|down|status`` (:mod:`facestream.cli.stack`).
"""
