#!/usr/bin/env bash
# build_apk.sh — builds the tether demo APK from Debian packages alone: no Gradle, no NDK.
#
#   android_demo/build_apk.sh [--out DIR]      # prints the signed APK's path on stdout
#
# Inputs (made first by make_models.py and build_native.sh):
#   android_demo/build/assets/   digits_{fp32,int8,features}.tmodel, models.json (make_models.py)
#   android_demo/build/lib/{arm64-v8a,armeabi-v7a}/libtether_jni.so          (build_native.sh)
#   android_demo/app/src/main/   manifest, res/, java/ (the app)
#   android_demo/bridge/src/     the JNI bridge, package dev.tether
# Outputs (in --out DIR, default android_demo/build, git-ignored):
#   tether-demo-unsigned.apk     aligned, unsigned, byte-identical from build to build
#   tether-demo.apk              signed with a debug key (debug.keystore, password "android")
#   apk-work/                    intermediates
#
# Steps: aapt2 compile + link against Debian's framework-res.apk; javac --release 8 against
# android.jar (API 23); dx to classes.dex; zip with fixed order, modes and timestamps;
# zipalign; apksigner. Each step is skipped while its output is newer than its inputs.
#
# Debian 12 has neither android.jar nor a dexer, so the script fetches two Debian 11 (bullseye)
# packages with `apt-get download` through a private sources list and apt state in the cache
# folder (never touching /etc/apt) and unpacks them there with `dpkg-deb -x`:
#   libandroid-23-java   android.jar of API 23
#   dalvik-exchange      dx (a single jar; its other Depends, proguard-cli and a JRE, serve
#                        only mainDexClasses and the wrapper script: java -jar runs it here)
#
# Environment: TETHER_ANDROID_BUILD (folder with assets/ and lib/, default android_demo/build),
# TETHER_ANDROID_CACHE (sdk/ and debug.keystore, default android_demo/build),
# TETHER_BRIDGE_SRC (default android_demo/bridge/src), SOURCE_DATE_EPOCH (zip entry times,
# default 1980-01-01T00:00:00Z).
# Exit status: 0 built; 1 a step failed; 2 bad usage; 3 a tool, package or input is missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
APP=$HERE/app/src/main
BRIDGE_SRC=${TETHER_BRIDGE_SRC:-$HERE/bridge/src}
INPUT=${TETHER_ANDROID_BUILD:-$HERE/build}
CACHE=${TETHER_ANDROID_CACHE:-$HERE/build}
OUT=$HERE/build
FRAMEWORK_RES=/usr/share/android-framework-res/framework-res.apk
MIN_SDK=24
TARGET_SDK=29
ABIS=(arm64-v8a armeabi-v7a)
ASSETS=(digits_fp32.tmodel digits_int8.tmodel digits_features.tmodel models.json)
EPOCH=${SOURCE_DATE_EPOCH:-315532800}  # zip's earliest time, 1980-01-01T00:00:00Z

# Bullseye packages (exact versions: the dex and the link inputs stay the same).
BULLSEYE_PKGS=(libandroid-23-java=6.0.1+r72-6 dalvik-exchange=10.0.0+r36-1)

say() { echo "build_apk: $*" >&2; }
die() { local code=$1; shift; say "error: $*"; exit "$code"; }

usage() {
    sed -n '2,4p' "$SELF" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
        --out) [ $# -ge 2 ] || usage; OUT=$2; shift 2 ;;
        --out=*) OUT=${1#--out=}; shift ;;
        -h|--help) usage ;;
        *) say "unknown argument: $1"; usage ;;
    esac
done
mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd)
CACHE=$(cd "$CACHE" && pwd)
WORK=$OUT/apk-work
SDK=$CACHE/sdk
mkdir -p "$WORK"

# ----- tools ---------------------------------------------------------------------------------
# command or file -> Debian package
TOOLS=(aapt2:aapt zipalign:zipalign apksigner:apksigner javac:default-jdk-headless
       java:default-jdk-headless keytool:default-jdk-headless zip:zip unzip:unzip
       apt-get:apt dpkg-deb:dpkg "$FRAMEWORK_RES:android-framework-res")
missing=()
for pair in "${TOOLS[@]}"; do
    tool=${pair%:*} pkg=${pair##*:}
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -e "$tool" ]; then
        say "missing: $tool (Debian package $pkg)"
        case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 \
            || die 3 "apt-get install ${missing[*]} failed"
    else
        die 3 "install them with: sudo apt-get install ${missing[*]}"
    fi
fi

# ----- inputs --------------------------------------------------------------------------------
for f in "${ASSETS[@]}"; do
    [ -f "$INPUT/assets/$f" ] || die 3 "$INPUT/assets/$f is missing; make the bundled models" \
        "with: .venv/bin/python android_demo/make_models.py (make setup first)"
done
for abi in "${ABIS[@]}"; do
    [ -f "$INPUT/lib/$abi/libtether_jni.so" ] || die 3 "$INPUT/lib/$abi/libtether_jni.so is" \
        "missing; build the native libraries with: android_demo/build_native.sh"
done
compgen -G "$BRIDGE_SRC/dev/tether/*.java" >/dev/null \
    || die 3 "no bridge sources in $BRIDGE_SRC/dev/tether/ (the JNI bridge, package dev.tether)"

# up_to_date OUTPUT INPUT...: OUTPUT exists and nothing in or under the INPUTs is newer.
up_to_date() {
    local out=$1; shift
    [ -e "$out" ] && [ -z "$(find -L "$@" -newer "$out" -print -quit 2>/dev/null)" ]
}

# ----- android.jar and dx from bullseye ------------------------------------------------------
ANDROID_JAR=$SDK/root/usr/lib/android-sdk/platforms/android-23/android.jar
DX_JAR=$SDK/root/usr/share/java/com.android.dx.jar

# The machine's main Debian archive and its keyring, from its apt sources (deb822 or one-line).
debian_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
             { uri = ""; key = ""
               for (i = 1; i <= NF; i++) {
                 if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); uri = $i }
                 if ($i ~ /^Signed-By:/) { sub(/^Signed-By:[ \t]*/, "", $i); key = $i } }
               n = split(uri, u, /[ \t]+/)
               for (j = 1; j <= n; j++) if (u[j] ~ /\/debian\/?$/) { print u[j], key; exit 0 } }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk '$1 == "deb" { key = ""; i = 2
               if ($i ~ /^\[/) { for (; i <= NF; i++) {
                   if ($i ~ /signed-by=/) { key = $i; sub(/.*signed-by=/, "", key); sub(/\]$/, "", key) }
                   if ($i ~ /\]$/) { i++; break } } }
               if ($i ~ /\/debian\/?$/) { print $i, key; exit 0 } }' "$f"
    done
}

fetch_sdk() {
    local uri key apt_dir
    read -r uri key < <(debian_mirror | head -n 1) || true
    uri=${uri:-http://deb.debian.org/debian}
    [ -f "${key:-}" ] || key=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$key" ] || die 3 "no Debian archive keyring ($key); install debian-archive-keyring"
    apt_dir=$SDK/apt
    rm -rf "$apt_dir" "$SDK/root" "$SDK/debs"
    mkdir -p "$apt_dir/etc" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$SDK/debs"
    echo "deb [signed-by=$key] $uri bullseye main" >"$apt_dir/etc/sources.list"
    : >"$apt_dir/status"
    local apt=(apt-get -q -o "Dir::Etc::SourceList=$apt_dir/etc/sources.list"
               -o Dir::Etc::SourceParts=/dev/null -o Dir::Etc::Preferences=/dev/null
               -o Dir::Etc::PreferencesParts=/dev/null -o "Dir::State=$apt_dir"
               -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::State::status=$apt_dir/status"
               -o "Dir::Cache=$apt_dir/cache" -o Debug::NoLocking=1
               -o "APT::Sandbox::User=$(id -un)")
    say "fetching ${BULLSEYE_PKGS[*]} from $uri bullseye (private apt state in $apt_dir)"
    "${apt[@]}" update >&2 || die 3 "apt-get update of $uri bullseye failed (network?)"
    (cd "$SDK/debs" && "${apt[@]}" download "${BULLSEYE_PKGS[@]}" >&2) \
        || die 3 "apt-get download ${BULLSEYE_PKGS[*]} from $uri bullseye failed"
    local deb
    for deb in "$SDK"/debs/*.deb; do
        dpkg-deb -x "$deb" "$SDK/root"
    done
    if [ ! -f "$ANDROID_JAR" ] || [ ! -f "$DX_JAR" ]; then
        die 1 "the bullseye packages did not hold $ANDROID_JAR and $DX_JAR"
    fi
    printf '%s\n' "${BULLSEYE_PKGS[@]}" >"$SDK/packages.txt"
}

if [ -f "$ANDROID_JAR" ] && [ -f "$DX_JAR" ] \
        && [ "$(cat "$SDK/packages.txt" 2>/dev/null)" = "$(printf '%s\n' "${BULLSEYE_PKGS[@]}")" ]; then
    say "sdk: up to date ($SDK)"
else
    fetch_sdk
fi

# ----- debug keystore ------------------------------------------------------------------------
KEYSTORE=$CACHE/debug.keystore
if [ -f "$KEYSTORE" ]; then
    say "keystore: up to date ($KEYSTORE)"
else
    say "keystore: generating $KEYSTORE"
    keytool -genkeypair -keystore "$KEYSTORE.tmp" -storetype PKCS12 -storepass android \
        -keypass android -alias androiddebugkey -keyalg RSA -keysize 2048 -validity 10000 \
        -dname "CN=Android Debug,O=Android,C=US" 1>&2
    mv "$KEYSTORE.tmp" "$KEYSTORE"
fi

# ----- resources: aapt2 compile, link --------------------------------------------------------
RES_ZIP=$WORK/res.zip
if up_to_date "$RES_ZIP" "$APP/res" "$SELF"; then
    say "aapt2 compile: up to date"
else
    say "aapt2 compile"
    rm -f "$RES_ZIP"
    aapt2 compile --dir "$APP/res" -o "$RES_ZIP"
fi

RES_APK=$WORK/resources.ap_
if up_to_date "$RES_APK" "$RES_ZIP" "$APP/AndroidManifest.xml" "$FRAMEWORK_RES" "$SELF"; then
    say "aapt2 link: up to date"
else
    say "aapt2 link"
    rm -rf "$WORK/gen" "$RES_APK"
    mkdir -p "$WORK/gen"
    aapt2 link -o "$RES_APK" -I "$FRAMEWORK_RES" --manifest "$APP/AndroidManifest.xml" \
        --min-sdk-version "$MIN_SDK" --target-sdk-version "$TARGET_SDK" \
        --java "$WORK/gen" "$RES_ZIP"
fi

# ----- code: javac, dx -----------------------------------------------------------------------
CLASSES_STAMP=$WORK/classes.stamp
if up_to_date "$CLASSES_STAMP" "$APP/java" "$BRIDGE_SRC" "$WORK/gen" "$ANDROID_JAR" "$SELF"; then
    say "javac: up to date"
else
    say "javac --release 8"
    rm -rf "$WORK/classes" "$CLASSES_STAMP"
    mkdir -p "$WORK/classes"
    find "$APP/java" "$BRIDGE_SRC" "$WORK/gen" -name '*.java' | LC_ALL=C sort >"$WORK/sources.txt"
    # dx reads Java 8 class files; no lambdas (dx makes invoke-custom of them, API 26+ only).
    javac --release 8 -encoding UTF-8 -g:source,lines -Xlint:all,-options,-serial \
        -classpath "$ANDROID_JAR" -d "$WORK/classes" @"$WORK/sources.txt"
    touch "$CLASSES_STAMP"
fi

DEX=$WORK/classes.dex
if up_to_date "$DEX" "$CLASSES_STAMP" "$DX_JAR" "$SELF"; then
    say "dx: up to date"
else
    say "dx"
    rm -f "$DEX"
    java -Xmx1024m -jar "$DX_JAR" --dex --min-sdk-version="$MIN_SDK" --output="$DEX" \
        "$WORK/classes"
fi

# ----- package: zip (fixed order, modes, times), zipalign --------------------------------------
UNSIGNED=$OUT/tether-demo-unsigned.apk
if up_to_date "$UNSIGNED" "$RES_APK" "$DEX" "$INPUT/assets" "${ABIS[@]/#/$INPUT/lib/}" "$SELF"; then
    say "package: up to date"
else
    say "package"
    stage=$WORK/stage
    rm -rf "$stage" "$WORK/unaligned.apk" "$UNSIGNED"
    mkdir -p "$stage/assets"
    (cd "$stage" && unzip -q "$RES_APK")
    cp "$DEX" "$stage/classes.dex"
    # The models and models.json (not make_models.py's test images, which only the tests read).
    find -L "$INPUT/assets" -maxdepth 1 -type f \( -name '*.tmodel' -o -name models.json \) \
         -exec cp -L {} "$stage/assets/" \;
    for abi in "${ABIS[@]}"; do
        mkdir -p "$stage/lib/$abi"
        cp -L "$INPUT/lib/$abi/libtether_jni.so" "$stage/lib/$abi/"
    done
    find "$stage" -type d -exec chmod 755 {} +
    find "$stage" -type f -exec chmod 644 {} +
    find "$stage" -exec touch -d "@$EPOCH" {} +
    # AndroidManifest.xml first, then every file in byte order; resources.arsc and the models
    # stored (arsc must be for API 30+; a stored model can be opened without inflating).
    (cd "$stage" && { echo AndroidManifest.xml
                      find . -type f ! -name AndroidManifest.xml | sed 's|^\./||' | LC_ALL=C sort
                    } | TZ=UTC zip -X -D -q -n .arsc:.tmodel "$WORK/unaligned.apk" -@)
    zipalign -f -p 4 "$WORK/unaligned.apk" "$UNSIGNED"
fi

# ----- sign ----------------------------------------------------------------------------------
SIGNED=$OUT/tether-demo.apk
if up_to_date "$SIGNED" "$UNSIGNED" "$KEYSTORE" "$SELF"; then
    say "apksigner: up to date"
else
    say "apksigner sign"
    rm -f "$SIGNED" "$SIGNED.idsig"
    apksigner sign --ks "$KEYSTORE" --ks-pass pass:android --key-pass pass:android \
        --ks-key-alias androiddebugkey --out "$SIGNED.tmp" "$UNSIGNED"
    mv "$SIGNED.tmp" "$SIGNED"
    rm -f "$SIGNED.tmp.idsig"
fi

echo "$SIGNED"
