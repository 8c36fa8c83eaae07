"""The job and its lifecycle: request, jobs-table record, ledger, workflow state, notification."""
