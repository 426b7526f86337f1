"""The official package's module paths (``sam3.model.sam3_image_processor`` ...), as thin aliases of ours.

Code written against Meta's ``sam3`` release imports from here unchanged; nothing here is a second
implementation. Importing this package imports nothing heavy: each alias module imports what it names.
"""
