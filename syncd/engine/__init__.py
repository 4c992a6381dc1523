"""The sync engine: the change model, the three-way decision, the queue, workers and transfers."""
