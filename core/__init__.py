"""The foundation every component imports: settings, secrets and small shared pieces (files)."""
