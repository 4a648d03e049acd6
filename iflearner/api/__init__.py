"""What a job author may ask for: the Pod Security levels and the tenancy policy (pure, no I/O)."""
