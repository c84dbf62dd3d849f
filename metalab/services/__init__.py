"""Services metalab provisions: what each one is, independent of where it runs."""
