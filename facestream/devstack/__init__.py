"""A real local Kafka + Redis stack for development and tests, without Docker."""
