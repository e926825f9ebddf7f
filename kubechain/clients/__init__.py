"""What users run against the API: the `kubechain` command line, replies to waiting calls, transcripts."""
