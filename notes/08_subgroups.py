# Cells to insert into notebooks/08_evaluation.ipynb (jupytext percent format), after the
# "Melanoma as a clinical question" section (they need test_df, probs_test, CLASSES, POS,
# CLINICAL, n_bootstrap, seed, RUN, SYN, dataset) and before "Saved for the report".
# Add `subgroup_min_n = 30  # groups smaller than this are shown but not ranked` to the
# parameters cell, and `from skinhelpers.evaluate import compare, subgroups` to the imports.
# At the end of the notebook (after metrics.json is written) add the last cell (hparams).

# %% [markdown]
# ## Subgroups: does it work as well for every patient?
# The same test predictions, scored within each group of sex, age band (<30, 30-44,
# 45-59, 60-74, 75+), body site and any other metadata column: balanced accuracy,
# melanoma-vs-rest ROC-AUC, and sensitivity and specificity at the melanoma threshold
# chosen on validation above (the first operating point). Each with its number of images
# and a 95% bootstrap interval. Groups with fewer than `subgroup_min_n` images are shown
# (grey) but not ranked: their intervals are too wide to say they differ.

# %%
THRESHOLD = CLINICAL["operating_points"][0]["threshold"] if CLINICAL else None
SUB = subgroups.subgroup_table(test_df, probs_test, CLASSES, POS, THRESHOLD,
                               n_bootstrap=n_bootstrap, seed=seed, min_n=subgroup_min_n)
files.write_csv(RUN / "subgroups.csv", SUB[["attribute", "group", "n", "metric", "value",
                                            "ci_low", "ci_high"]])
if SUB["attribute"].nunique() == 1:
    print("This dataset has no metadata (sex, age, body site): only the whole test set.")
fig = subgroups.plot_forest(SUB, title=f"Subgroups, {PRIMARY}, test (95% CI; grey: "
                                       f"n < {subgroup_min_n}, not ranked)")
figures.save_figure(fig, dataset, "08_subgroups", synthetic=SYN)
plt.show()
wide = SUB.pivot_table(index=["attribute", "group", "n"], columns="metric", values="value",
                       sort=False)
display(plots.table(wide, "Subgroup metrics (test)", SYN))
worst = SUB[(SUB["rank"] == 1) & (SUB["metric"] == "balanced_accuracy")]
if len(worst):
    display(Markdown("Lowest balanced accuracy among the groups large enough to rank: "
                     + "; ".join(f"{r.attribute} = **{r.group}** {r.value:.3f} "
                                 f"({r.ci_low:.3f}-{r.ci_high:.3f}, n={r.n})"
                                 for r in worst.itertuples()) + "."))

# %% [markdown]
# ### How the diagnoses were confirmed (description only)

# %%
dx = subgroups.dx_type_table(test_df)
if dx is not None:
    display(plots.table(dx, "Test images by diagnosis and confirmation (dx_type)", SYN))
    display(Markdown(subgroups.DX_TYPE_NOTE))

# %% [markdown]
# ## Browse runs together: TensorBoard hparams
# The run's parameters and headline metrics go to `tb/` in the run folder;
# `tensorboard --logdir runs` shows every run in its HPARAMS tab. Two runs are compared
# with a paired bootstrap by `python -m skinhelpers compare RUN_A RUN_B`.

# %%
print(f"hparams logged to {compare.log_hparams(RUN)}")
