"""nonstop: a load balancer and zero-downtime deployer for apps on your own servers."""

__version__ = "0.1.0"
