"""The pipeline's topics on the stack's broker, created idempotently.

Which topics exist, with how many partitions and which configs, is not the stack's business:
that list is :func:`facestream.runtime.topics.topic_specs`, shared with the deployments.
"""

from __future__ import annotations

import logging

from facestream.devstack.config import StackConfig, StackError, resolve
from facestream.devstack.kafka_broker import admin_client, describe
from facestream.runtime.topics import Topics, topic_specs

log = logging.getLogger(__name__)


def ensure_topics(
    partitions: int | None = None,
    *,
    prefix: str = "",
    timeout: float = 30.0,
    config: StackConfig | None = None,
) -> list[str]:
    """Create the missing topics of :func:`~facestream.runtime.topics.topic_specs`; return the
    names created.

    Existing topics are left alone (adding partitions would remap keys to partitions), with a
    warning if their partition count differs from the one asked for. ``identities.v1`` and
    ``encodings.v1`` with different counts is an error: the matchers rely on them matching.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    cfg = resolve(config)
    specs = topic_specs(cfg.partitions if partitions is None else partitions, prefix)
    admin = admin_client(cfg, timeout)
    created: list[str] = []
    try:
        existing = describe(admin)
        for spec in specs:
            have = existing.get(spec.name)
            if have is not None:
                if have != spec.partitions:
                    log.warning(
                        "topic %s exists with %d partitions (asked for %d); left as it is",
                        spec.name,
                        have,
                        spec.partitions,
                    )
                continue
            topic = NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=1,
                topic_configs=dict(spec.config),
            )
            try:
                admin.create_topics([topic], timeout_ms=int(timeout * 1000))
            except TopicAlreadyExistsError:
                # Someone else created it between our describe and create: that is fine.
                continue
            created.append(spec.name)
        final = describe(admin)
    finally:
        admin.close()
    if created:
        log.info("created topics: %s", ", ".join(created))
    names = Topics(prefix)
    enc, ids = final.get(names.encodings), final.get(names.identities)
    if enc is not None and ids is not None and enc != ids:
        raise StackError(
            f"{names.identities} has {ids} partitions but {names.encodings} has {enc}; they must "
            "match. For a local stack: `down`, delete the kafka/data folder, `up` again"
        )
    return created
