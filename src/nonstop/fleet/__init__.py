"""Fleets: one deploy across several hosts, through the front load balancer."""
