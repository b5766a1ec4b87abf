"""The POP3 proxy: log in on the node, route by the user map, replay on the back-end, relay."""
