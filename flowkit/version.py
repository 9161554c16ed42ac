"""flowkit's version (its own module, so that any module can read it without importing the
package's public API).

Stores (``store.json``), training runs (``config.json``) and imported flows record it. Bump it with
every change of a format flowkit writes (store, video file, index, checkpoint): a lab with stores
and runs of several versions tells by it which flowkit wrote what. 0.2.0: video files of format
version 2 (coded flow and RGB), index version 4, ``flowkit-checkpoint`` files.
"""
__version__ = "0.2.0"
