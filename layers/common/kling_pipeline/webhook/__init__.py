"""The webhook fast path: WaveSpeed's signed "prediction finished" calls wake a job's workflow."""
