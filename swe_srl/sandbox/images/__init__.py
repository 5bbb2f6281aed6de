"""Docker images of the sandboxes: how they are defined and built, where a task's image comes
from, and the image cache that keeps the project's images under a disk budget.

Making an image:

* :mod:`.build`    the base image (debootstrap -> docker import, or the Dockerfile) and one task
                   image per task folder, tagged by a hash of what defines them; ``image_exists``,
                   ``compute_base_commit`` (a task image's base commit, on the host)
* :mod:`.commit`   ``commit_image``: an image made in a build container of our own, removed
                   whatever happens; the sweep of build containers that killed builds left
* :mod:`.source`   ``ensure_image`` / ``expected_image_tag``: the image a task is graded in,
                   built (a bundled task) or pulled (any other), and its tag

Keeping images under a budget:

* :mod:`.cache`    ``ImageCache``: leases a task's image for an episode (building it, evicting
                   others to make room), prefetches the next tasks' images, ``usage()``
* :mod:`.eviction` the policy: what may not be evicted and why, the order the rest go in, what
                   an image about to be built will add
* :mod:`.index`    the per-engine JSON index several runs share: last use, bytes, pulled
                   images, live holds
* :mod:`.disk`     the bytes the project's images take, counted as Docker counts them (distinct
                   layers); ``Usage``, ``budget_bytes``, ``human_bytes``

A new image source (another registry, another kind of task folder) is a branch in
:func:`.source.ensure_image` and :func:`.source.expected_image_tag`, keyed on what the task
carries; the cache then holds and evicts what it builds or pulls like any other task image
(counted among the project's images by its ``swe-srl.kind`` label, :data:`.commit.LABEL_KIND`,
or, pulled, by the index's record of it).

Container labels and the reaper of dead runs' sandbox containers are the sandbox's, not the
images': :mod:`swe_srl.sandbox.reaper`.
"""
