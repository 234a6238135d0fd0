"""The web page's assets (JavaScript modules, CSS, icon), served under /static/web by api.web.routes.

A package only so that setuptools' package-data (`*.js`, `*.css`, ...) ships these files in the wheel:
the page must work offline, with nothing loaded from elsewhere.
"""
