"""One router per resource: health, image (predict / detect / segment), track."""
