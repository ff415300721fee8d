"""The foundation every component imports: the settings (.env, environment, secrets), the native stack's
credentials, the schema registry client and small shared pieces (files). Operations (supervisor, DLQ tools,
status) live in control/."""
