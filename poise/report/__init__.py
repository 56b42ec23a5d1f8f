"""Views of results: plots now; the HTML report of a discovery run builds on them."""
