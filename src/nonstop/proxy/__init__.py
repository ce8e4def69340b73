"""The embedded engine: an HTTP/1.1 reverse proxy whose balancing matches nginx's."""
