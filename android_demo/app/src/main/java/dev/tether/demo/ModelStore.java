package dev.tether.demo;

import android.content.Context;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;

/**
 * Where the demo's models live: the bundled ones in the APK's assets (written by
 * android_demo/make_models.py), the fine-tuned one in the app's files directory.
 */
final class ModelStore {
    static final String FP32 = "digits_fp32.tmodel";
    static final String INT8 = "digits_int8.tmodel";
    static final String FEATURES = "digits_features.tmodel";
    static final String META = "models.json";
    static final String FINETUNED = "digits_finetuned.tmodel";

    /** assets/models.json: where the classifier's head starts, classes, input H, W, C. */
    static final class Meta {
        final String headInput;
        final int classes;
        final int[] input;

        Meta(String headInput, int classes, int[] input) {
            this.headInput = headInput;
            this.classes = classes;
            this.input = input;
        }
    }

    private static String nativeError;
    private static boolean nativeTried;

    private final Context context;

    ModelStore(Context context) {
        this.context = context.getApplicationContext();
    }

    /** Loads libtether_jni.so once; null on success, else why it failed (shown in the UI). */
    static synchronized String loadNative() {
        if (!nativeTried) {
            nativeTried = true;
            try {
                System.loadLibrary("tether_jni");
            } catch (UnsatisfiedLinkError e) {
                nativeError = e.getMessage();
            }
        }
        return nativeError;
    }

    /** The bytes of an asset of the APK. */
    byte[] asset(String name) throws IOException {
        InputStream in = context.getAssets().open(name);
        try {
            return readAll(in);
        } finally {
            in.close();
        }
    }

    Meta meta() throws IOException, JSONException {
        JSONObject json = new JSONObject(new String(asset(META), StandardCharsets.UTF_8));
        JSONArray shape = json.getJSONArray("input");
        int[] input = new int[shape.length()];
        for (int i = 0; i < input.length; i++) input[i] = shape.getInt(i);
        return new Meta(json.getString("head_input"), json.getInt("classes"), input);
    }

    File finetunedFile() {
        return new File(context.getFilesDir(), FINETUNED);
    }

    boolean hasFinetuned() {
        return finetunedFile().isFile();
    }

    /** The float32 classifier to start from: the fine-tuned one if present, else the bundled. */
    byte[] classifier() throws IOException {
        File f = finetunedFile();
        if (f.isFile()) {
            InputStream in = new FileInputStream(f);
            try {
                return readAll(in);
            } finally {
                in.close();
            }
        }
        return asset(FP32);
    }

    /**
     * Writes the fine-tuned model: to a temporary file in the same directory, synced, then
     * renamed over the old one, so a crash never leaves a half-written model behind.
     */
    void saveFinetuned(byte[] data) throws IOException {
        File target = finetunedFile();
        File tmp = new File(target.getParentFile(), FINETUNED + ".tmp");
        FileOutputStream out = new FileOutputStream(tmp);
        try {
            out.write(data);
            out.getFD().sync();
        } catch (IOException e) {
            out.close();
            tmp.delete();
            throw e;
        }
        out.close();
        if (!tmp.renameTo(target)) {
            tmp.delete();
            throw new IOException("could not rename " + tmp + " to " + target);
        }
    }

    /** Deletes the fine-tuned model; true when there was one. */
    boolean deleteFinetuned() {
        new File(context.getFilesDir(), FINETUNED + ".tmp").delete();
        return finetunedFile().delete();
    }

    private static byte[] readAll(InputStream in) throws IOException {
        ByteArrayOutputStream buf = new ByteArrayOutputStream(1 << 16);
        byte[] chunk = new byte[1 << 16];
        for (int n; (n = in.read(chunk)) > 0; ) buf.write(chunk, 0, n);
        return buf.toByteArray();
    }
}
