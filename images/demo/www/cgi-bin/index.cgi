#!/bin/sh
# The demo's home page: busybox httpd runs this for "/" (there is no index.html).
printf 'Content-Type: text/plain\r\n\r\n'
echo "hello from swarmlet"
echo "served by container $(hostname)"
