"""Micro-batching of queued work and the CPU pool that keeps request-sized work off the event loop."""
