"""The Kafka boundary: client configurations, the produce call, topic administration."""
