"""Native mirror of docker-compose.yml: the same components as plain processes on loopback."""
