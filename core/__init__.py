"""The foundation every component imports: the settings (.env, environment, secrets), the native stack's
credentials, and the schema registry client. Operations (supervisor, DLQ tools, status) live in control/."""
