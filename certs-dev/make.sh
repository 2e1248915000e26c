#!/usr/bin/env bash
# Makes the DEVELOPMENT TLS material used by the tests and the examples: a CA, a server
# certificate for localhost, 127.0.0.1 and ::1, and a second one for shop.localhost (to test SNI).
# For development and tests only: the keys are public, in this repository. Never use them in
# production. Run from anywhere: bash certs-dev/make.sh
set -euo pipefail
cd "$(dirname "$0")"
days=3650

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
  -subj "/CN=Switchyard development CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout ca.key -out ca.crt 2>/dev/null

leaf() { # name, subjectAltName
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
leaf localhost "DNS:localhost,IP:127.0.0.1,IP:::1"
leaf shop.localhost "DNS:shop.localhost,DNS:*.shop.localhost"
rm -f ca.srl
echo "made: ca.crt ca.key localhost.crt localhost.key shop.localhost.crt shop.localhost.key"
