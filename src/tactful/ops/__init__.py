"""Operating the platform: the job queue over HTTP and the CLI."""
