"""What serves the traffic: nonstop's embedded proxy (``nonstop.proxy``) or a real nginx
(``nonstop.engines.nginx``), chosen by ``engine`` in the config."""
