"""Services the routes depend on: the image model (one call at a time) and the video tracking sessions."""
