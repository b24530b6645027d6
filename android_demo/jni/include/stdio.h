/* The JDK's jni.h includes <stdio.h> but uses nothing from it; builds with no C library
 * headers (-nostdlibinc: Android without the NDK) find this empty one instead. */
