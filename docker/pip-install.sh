#!/bin/sh
# pip inside an image build. Index settings and CA bundle come as BuildKit secrets, never as a layer:
#   --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt   (a TLS-intercepting proxy's CA)
#   --secret id=pip_conf,src=my-pip.conf                         (index-url of a mirror, credentials)
# Without them pip uses the public index with the image's own CAs.
set -eu
[ -f /run/secrets/pip_ca ] && export PIP_CERT=/run/secrets/pip_ca
[ -f /run/secrets/pip_conf ] && export PIP_CONFIG_FILE=/run/secrets/pip_conf
exec pip install --disable-pip-version-check "$@"
