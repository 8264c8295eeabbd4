"""Getting model weights onto this machine: ``plughost pull`` and ``POST /v1/models/{id}/pull``.

- :mod:`host.downloads.errors`: what can go wrong, each with its exit code;
- :mod:`host.downloads.hubs`: Hugging Face and ModelScope, the two requests each needs (list a
  revision's files with sizes and hashes; fetch one file);
- :mod:`host.downloads.fetch`: one file over HTTP, resumed where it stopped, hashed as it arrives;
- :mod:`host.downloads.store`: the models folder (``download.dir``): complete folders, staging,
  the inventory, removal;
- :mod:`host.downloads.pull`: one pull from start to an installed folder, with progress;
- :mod:`host.downloads.manager`: the server's background downloads and the gate the scheduler asks;
- :mod:`host.downloads.cli`: ``plughost pull``, ``plughost models``, ``plughost rm``.

Importing this package is cheap; the network code is imported by the pull itself.
"""
