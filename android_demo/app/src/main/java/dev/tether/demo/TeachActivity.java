package dev.tether.demo;

import android.app.Activity;
import android.os.Bundle;
import android.view.View;
import android.widget.ArrayAdapter;
import android.widget.Button;
import android.widget.Spinner;
import android.widget.TextView;
import android.widget.Toast;

import org.json.JSONException;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Locale;

import dev.tether.HeadTuner;

/**
 * Collect labelled drawings, then fine-tune the classifier's dense head on them in the engine
 * (HeadTuner) on a background thread: accuracy on the collected set before and after, loss per
 * epoch; the exported classifier is saved to files/digits_finetuned.tmodel, which the main
 * screen then uses.
 */
public class TeachActivity extends Activity {
    static final int EPOCHS = 30;
    static final float LEARNING_RATE = 0.005f;
    static final long SEED = 1;

    /**
     * The collected drawings, kept for the life of the process (UI thread only): they survive
     * the activity being recreated or left, so a second Teach visit adds to them.
     */
    private static final ArrayList<float[]> IMAGES = new ArrayList<float[]>();
    private static final ArrayList<Integer> LABELS = new ArrayList<Integer>();

    private ModelStore store;
    private ModelStore.Meta meta;
    private Spinner digit;
    private DrawingView pad;
    private Button add, fineTune;
    private TextView counts, report;
    private boolean running;

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        setContentView(R.layout.activity_teach);
        store = new ModelStore(this);

        digit = (Spinner) findViewById(R.id.digit);
        pad = (DrawingView) findViewById(R.id.pad);
        add = (Button) findViewById(R.id.add);
        fineTune = (Button) findViewById(R.id.fine_tune);
        counts = (TextView) findViewById(R.id.counts);
        report = (TextView) findViewById(R.id.report);
        ((TextView) findViewById(R.id.hint)).setText(getString(R.string.teach_hint, EPOCHS,
                String.valueOf(LEARNING_RATE)));

        try {
            meta = store.meta();
        } catch (IOException | JSONException e) {
            report.setText(getString(R.string.error_meta, e.getMessage()));
            add.setEnabled(false);
            fineTune.setEnabled(false);
        }
        int classes = meta != null ? meta.classes : 10;
        String[] names = new String[classes];
        for (int i = 0; i < classes; i++) names[i] = String.valueOf(i);
        ArrayAdapter<String> adapter = new ArrayAdapter<String>(this,
                android.R.layout.simple_spinner_item, names);
        adapter.setDropDownViewResource(android.R.layout.simple_spinner_dropdown_item);
        digit.setAdapter(adapter);

        add.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                addDrawing();
            }
        });
        findViewById(R.id.clear).setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                pad.clear();
            }
        });
        fineTune.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                fineTune();
            }
        });
        showCounts();
    }

    private int side() {
        return meta != null && meta.input.length > 0 ? meta.input[0] : Digitizer.SIDE;
    }

    private void addDrawing() {
        float[] x = pad.toModelInput(side());
        if (x == null) {
            Toast.makeText(this, R.string.draw_first, Toast.LENGTH_SHORT).show();
            return;
        }
        int label = digit.getSelectedItemPosition();
        IMAGES.add(x);
        LABELS.add(label);
        pad.clear();
        Toast.makeText(this, getString(R.string.added, label), Toast.LENGTH_SHORT).show();
        showCounts();
    }

    private void showCounts() {
        int classes = digit.getCount();
        int[] n = new int[classes];
        for (int label : LABELS) if (label < classes) n[label]++;
        StringBuilder sb = new StringBuilder();
        for (int c = 0; c < classes; c++) {
            if (c > 0) sb.append(c % 5 == 0 ? "\n" : "   ");
            sb.append(c).append(": ").append(n[c]);
        }
        counts.setText(getString(R.string.counts, LABELS.size(), "\n" + sb));
    }

    private void setRunning(boolean on) {
        running = on;
        add.setEnabled(!on && meta != null);
        fineTune.setEnabled(!on && meta != null);
    }

    private void fineTune() {
        if (running || meta == null) return;
        final int n = IMAGES.size();
        if (n == 0) {
            Toast.makeText(this, R.string.need_samples, Toast.LENGTH_SHORT).show();
            return;
        }
        final float[][] images = IMAGES.toArray(new float[n][]);
        final int[] labels = new int[n];
        for (int i = 0; i < n; i++) labels[i] = LABELS.get(i);
        final String headInput = meta.headInput;
        setRunning(true);
        report.setText(getString(R.string.fine_tuning, n));

        Thread worker = new Thread(new Runnable() {
            @Override
            public void run() {
                final String text = train(images, labels, headInput);
                runOnUiThread(new Runnable() {
                    @Override
                    public void run() {
                        if (isDestroyed()) return;
                        setRunning(false);
                        report.setText(text);
                    }
                });
            }
        }, "tether-fine-tune");
        worker.start();
    }

    /** Runs on the worker thread: fit, measure, export, save. Returns the report text. */
    private String train(float[][] images, int[] labels, String headInput) {
        String nativeError = ModelStore.loadNative();
        if (nativeError != null) return getString(R.string.error_native, nativeError);
        StringBuilder sb = new StringBuilder();
        try {
            byte[] full = store.classifier();
            byte[] features = store.asset(ModelStore.FEATURES);
            HeadTuner tuner = new HeadTuner(full, features, headInput, EPOCHS, LEARNING_RATE, SEED);
            try {
                float before = tuner.accuracy(images, labels);
                long t0 = System.nanoTime();
                float[] losses = tuner.fit(images, labels);
                long trainNanos = System.nanoTime() - t0;
                float after = tuner.accuracy(images, labels);
                byte[] tuned = tuner.export();
                store.saveFinetuned(tuned);
                sb.append(String.format(Locale.US,
                        "Accuracy on the %d drawings: %.1f %% before, %.1f %% after\n"
                                + "%d epochs in %.0f ms; loss per epoch:\n",
                        images.length, 100 * before, 100 * after, losses.length, trainNanos / 1e6));
                for (int e = 0; e < losses.length; e++) {
                    sb.append(String.format(Locale.US, "%3d  %.4f\n", e + 1, losses[e]));
                }
                sb.append(String.format(Locale.US, "Saved %s (%d bytes); the main screen uses it.",
                        store.finetunedFile().getName(), tuned.length));
            } finally {
                tuner.close();
            }
        } catch (IOException | RuntimeException e) {
            sb.append("Fine-tuning failed: ").append(e.getMessage());
        }
        return sb.toString();
    }
}
