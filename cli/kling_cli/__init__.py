"""`kling-pipeline`: submit prompts to a deployed Kling pipeline and follow them to the video."""

#: Exit statuses, documented in `kling-pipeline --help`.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
