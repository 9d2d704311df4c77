"""The pure core: numpy in, state and decisions out. Nothing here imports Kafka, faust or does I/O."""
