/**
 * The live job view of notebook outputs: a rendermime factory for
 * `application/vnd.llmgw.job+json` ({"version": 1, "job_id", "via"}).
 *
 * Why: the kernel's ipywidgets widget dies with its kernel (after a restart
 * and a reload JupyterLab shows "model not found"), while the job lives on in
 * the server. This view talks to the server directly (REST and the shared
 * event stream of the GatewayModel), so it shows the job's current state and
 * answer whenever the notebook is open, kernel or not. It ranks before the
 * widget renderer and is a complete view (state, progress, approval, answer,
 * cancel). A job the server does not know (run by an embedded gateway, or
 * deleted) shows the bundle's Markdown fallback through the strict sanitizer.
 */
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import type { IRenderMime } from '@jupyterlab/rendermime';
import { ReactWidget } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import React, { useEffect, useState } from 'react';

import {
  CANCELLABLE_STATUSES,
  GatewayRequestError,
  IApproval,
  IJobEvent,
  IJobView,
  isTerminal
} from './api';
import { CommandIDs, runCommand } from './commands';
import {
  ApprovalCard,
  JobAge,
  Markdown,
  SmallButton,
  StateBadge,
  useDecision
} from './components';
import {
  callerLabel,
  formatTime,
  formatUsage,
  jobState,
  modelView,
  outcomeText,
  providerLabel
} from './format';
import { useNow, useSignalValue } from './hooks';
import {
  fallbackSource,
  IJobBundle,
  JOB_MIME_TYPE,
  JOB_RENDERER_RANK,
  parseJobBundle
} from './bundle';
import { GatewayModel } from './model';

/** How many of a job's latest events the output shows. */
const SHOWN_EVENTS = 8;

type Source = 'loading' | 'live' | 'saved';

interface IJobOutputProps {
  bundle: IJobBundle | null;
  fallback: string;
  model: GatewayModel;
  commands: CommandRegistry;
  rendermime: IRenderMimeRegistry | null;
}

/** The live view or, for a job the server does not know, the saved Markdown. */
function JobOutput(props: IJobOutputProps): JSX.Element {
  const { bundle, model } = props;
  const jobId = bundle?.job_id ?? '';
  const [source, setSource] = useState<Source>(bundle ? 'loading' : 'saved');
  const [why, setWhy] = useState('');
  useEffect(() => {
    if (!jobId) {
      setSource('saved');
      return;
    }
    let live = true;
    setSource('loading');
    model.pinJob(jobId);
    model.fetchJob(jobId).then(
      () => live && setSource('live'),
      (error: unknown) => {
        if (!live) {
          return;
        }
        const status = (error as GatewayRequestError)?.status;
        setWhy(
          status === 404
            ? 'The Jupyter server does not know this job'
            : 'The gateway of this Jupyter server did not answer'
        );
        setSource('saved');
      }
    );
    return () => {
      live = false;
      model.unpinJob(jobId);
    };
  }, [model, jobId]);
  const job = useSignalValue([model.jobChanged, model.jobsChanged], () =>
    jobId ? (model.getJob(jobId) ?? null) : null
  );
  if (source === 'live' && job) {
    return <LiveJob {...props} job={job} />;
  }
  return (
    <div
      className="llmgw-output llmgw-output-saved"
      data-testid="llmgw-output"
      data-source={source === 'loading' ? 'loading' : 'saved'}
      data-job-id={jobId}
    >
      {source === 'saved' && jobId ? (
        <div className="llmgw-output-note">
          {why || 'Not live'}: this is the output saved with the notebook
          {bundle?.via === 'embedded' ? ' (the job ran in the kernel)' : ''}.
        </div>
      ) : null}
      {props.fallback ? (
        <Markdown
          source={props.fallback}
          rendermime={props.rendermime}
          className="llmgw-output-fallback"
        />
      ) : null}
    </div>
  );
}

function LiveJob(props: IJobOutputProps & { job: IJobView }): JSX.Element {
  const { job, model, commands, rendermime } = props;
  const finished = isTerminal(job.status);
  const now = useNow(!finished);
  const { state } = jobState(job);
  const events = useSignalValue<readonly IJobEvent[]>(
    [model.jobEventsChanged],
    () => model.eventsFor(job.id)
  );
  const approval = useSignalValue<IApproval | undefined>(
    [model.approvalsChanged],
    () => model.pendingApprovalFor(job.id)
  );
  const echo = useSignalValue([model.summaryChanged], () =>
    modelView(model.summary)
  );
  useEffect(() => {
    if (finished) {
      return;
    }
    void model.watchJob(job.id).catch(() => undefined);
    return () => model.unwatchJob(job.id);
  }, [model, job.id, finished]);
  const decision = useDecision(model, job);
  const outcome = outcomeText(job, decision);
  const usage = formatUsage(job.usage);
  const shown = events.slice(-SHOWN_EVENTS);
  return (
    <div
      className="llmgw-output llmgw-output-live"
      data-testid="llmgw-output"
      data-source="live"
      data-job-id={job.id}
      data-provider={job.provider}
      data-status={job.status}
      data-state={state}
    >
      <div className="llmgw-output-head">
        <StateBadge job={job} className="llmgw-output-state" />
        <span className="llmgw-output-title">
          {providerLabel(job.provider)} job {job.id}
        </span>
        <span className="llmgw-output-caller" title={job.caller}>
          {callerLabel(job.caller)}
        </span>
        {echo.text && !finished && job.provider === 'codex' ? (
          <span className="llmgw-output-model" title={echo.title}>
            {echo.text}
          </span>
        ) : null}
        <JobAge job={job} now={now} className="llmgw-output-age" />
      </div>
      {job.prompt_preview ? (
        <div className="llmgw-output-prompt" title={job.prompt_preview}>
          {job.prompt_preview}
        </div>
      ) : null}
      {job.status === 'awaiting_approval' ? (
        approval ? (
          <ApprovalCard
            as="div"
            approval={approval}
            now={now}
            showArguments={false}
            onDecide={approve =>
              runCommand(
                commands,
                approve ? CommandIDs.approve : CommandIDs.deny,
                {
                  approvalId: approval.id
                }
              )
            }
          />
        ) : (
          <div className="llmgw-output-note">
            Waits for the owner's approval (Agent jobs panel).
          </div>
        )
      ) : null}
      {!finished && job.status !== 'awaiting_approval' ? (
        <ol className="llmgw-output-events" aria-label="progress">
          {shown.length === 0 ? (
            <li className="llmgw-output-event llmgw-empty">
              {job.status === 'queued' ? 'queued' : 'starting'}…
            </li>
          ) : (
            shown.map(event => (
              <li
                key={event.seq}
                className="llmgw-output-event"
                data-type={event.type}
              >
                <span className="llmgw-job-event-time">
                  {formatTime(event.ts)}
                </span>{' '}
                <span className="llmgw-job-event-summary">{event.summary}</span>
              </li>
            ))
          )}
        </ol>
      ) : null}
      {outcome ? (
        <div
          className="llmgw-output-outcome"
          data-testid="llmgw-output-outcome"
        >
          {outcome}
        </div>
      ) : null}
      {job.error ? (
        <div className="llmgw-job-error" data-testid="llmgw-output-error">
          {job.error.category}: {job.error.message}
        </div>
      ) : null}
      {finished && job.final_message ? (
        <Markdown
          source={job.final_message}
          rendermime={rendermime}
          className="llmgw-answer"
        />
      ) : null}
      <div className="llmgw-output-foot">
        {usage ? (
          <span className="llmgw-job-usage" data-testid="llmgw-output-usage">
            {usage}
          </span>
        ) : null}
        {CANCELLABLE_STATUSES.has(job.status) ? (
          <SmallButton
            kind="warn"
            className="llmgw-cancel"
            testid="llmgw-output-cancel"
            onClick={() =>
              void runCommand(commands, CommandIDs.cancelJob, { jobId: job.id })
            }
          >
            Cancel
          </SmallButton>
        ) : null}
      </div>
    </div>
  );
}

/** The renderer of one output. */
export class JobOutputRenderer
  extends ReactWidget
  implements IRenderMime.IRenderer
{
  constructor(private _options: JobOutputRenderer.IOptions) {
    super();
    this.addClass('llmgw-output-renderer');
  }

  renderModel(mimeModel: IRenderMime.IMimeModel): Promise<void> {
    this._bundle = parseJobBundle(mimeModel.data[JOB_MIME_TYPE]);
    this._fallback = fallbackSource(mimeModel.data);
    this.update();
    return Promise.resolve();
  }

  render(): JSX.Element {
    return (
      <JobOutput
        key={this._bundle?.job_id ?? ''}
        bundle={this._bundle}
        fallback={this._fallback}
        model={this._options.model}
        commands={this._options.commands}
        rendermime={this._options.rendermime}
      />
    );
  }

  private _bundle: IJobBundle | null = null;
  private _fallback = '';
}

export namespace JobOutputRenderer {
  export interface IOptions {
    model: GatewayModel;
    commands: CommandRegistry;
    rendermime: IRenderMimeRegistry | null;
  }
}

/**
 * The rendermime factory. `safe`: everything it shows is server data as
 * React text or Markdown through the strict sanitizer, so untrusted
 * notebooks get the live view too.
 */
export function jobRendererFactory(
  options: JobOutputRenderer.IOptions
): IRenderMime.IRendererFactory {
  return {
    safe: true,
    mimeTypes: [JOB_MIME_TYPE],
    defaultRank: JOB_RENDERER_RANK,
    createRenderer: () => new JobOutputRenderer(options)
  };
}
