"""The web page for people (issue 11): plain HTML and JavaScript modules over the public HTTP API."""
