#!/bin/sh
# Seeds corpus/<target>/ with every file of the repository's SIP fixtures. Each file is named after
# its path (slashes become "__") so that equal names in different folders do not collide.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
fixtures="$here/../../tests/fixtures"
for target in parse framer; do
    mkdir -p "$here/corpus/$target"
    for dir in rfc4475 rfc5118 real protos/rendered; do
        (cd "$fixtures" && find "$dir" -type f) | while read -r f; do
            cp "$fixtures/$f" "$here/corpus/$target/$(echo "$f" | sed 's|/|__|g')"
        done
    done
    echo "corpus/$target: $(ls "$here/corpus/$target" | wc -l) files"
done
