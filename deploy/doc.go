// Package deploy holds no code: its tests install and run what the repository ships for
// deployment (examples/install.sh, examples/omero-adi.service, Containerfile) the way a facility
// would, inside a Debian bookworm root made with debootstrap and run with podman:
//
//   - TestSystemdService boots that root with systemd as PID 1, runs examples/install.sh, starts
//     the shipped unit unchanged and has it run a plain and a preprocessing order (rootless podman
//     as the service user) against the omero CLI double;
//   - TestContainerImage builds the Containerfile from local parts (the same root as base image,
//     the double in place of omero-py) and runs a preprocessing order through nested podman as
//     the image's unprivileged user, with the run flags README documents.
//
// They live apart from cmd/omero-adi because they need root, podman and debootstrap, take a few
// minutes, and test files rather than code; `make deploy-test` runs only them. The bookworm root
// is cached in /var/cache/omero-adi-test (ADI_DEPLOY_CACHE), keyed by its package list.
package deploy
